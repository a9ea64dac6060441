//! The checks a subscribe request passes before anything is joined, the same on a shard and on
//! an edge: a room served here, a well-formed resume position, an upgrade, a service not
//! stopping, and a free place.

use std::sync::Arc;

use chatflow::http::{self, Body};
use chatflow::lifecycle::Lifecycle;
use chatflow::protocol::{BadPosition, Position};
use chatflow::rooms::{RoomId, RoomRange};
use chatflow::router;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A subscribe request let in: its room, where it resumes, and its place.
pub struct Admitted {
    /// The room asked for.
    pub room: RoomId,
    /// The position of the last message the subscriber saw, when it resumes.
    pub after: Option<Position>,
    /// Its place among the subscribers; dropped, it frees the place.
    pub permit: OwnedSemaphorePermit,
}

/// Where a subscribe request is checked: the rooms served, the service's stop, its places.
pub struct Door<'a> {
    /// Rooms served here.
    pub rooms: RoomRange,
    /// Refuses new subscribers once the stop begins.
    pub life: &'a Lifecycle,
    /// One permit per subscriber.
    pub places: &'a Arc<Semaphore>,
    /// What the 404 for a room outside `rooms` says first.
    pub not_served: &'static str,
}

impl Door<'_> {
    /// Lets `req` for `room` in, or answers why not.
    #[expect(
        clippy::result_large_err,
        reason = "the refusal is returned to the router at once, never carried further"
    )]
    pub fn admit<B>(&self, req: &Request<B>, room: &str) -> Result<Admitted, Response<Body>> {
        let room = self.rooms.parse_room(room).map_err(|e| {
            let not_served = self.not_served;
            http::text(StatusCode::NOT_FOUND, format!("{not_served}: {e}\n"))
        })?;
        let after = resume_position(req.uri().query())
            .map_err(|e| http::text(StatusCode::BAD_REQUEST, format!("after: {e}\n")))?;
        let permit = router::admit(req, self.life, self.places)
            .map_err(|refusal| refusal.response("subscriber"))?;
        Ok(Admitted {
            room,
            after,
            permit,
        })
    }
}

/// The `after` query parameter (the last one, if repeated; percent-decoded): the position of
/// the last message the subscriber saw.
pub fn resume_position(query: Option<&str>) -> Result<Option<Position>, BadPosition> {
    let Some(query) = query else {
        return Ok(None);
    };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "after")
        .last()
        .map(|(_, value)| value.parse())
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_read_from_the_query_and_a_bad_one_is_refused() {
        let p = |sequence, index| Some(Position { sequence, index });
        assert_eq!(resume_position(None), Ok(None));
        assert_eq!(resume_position(Some("x=1")), Ok(None));
        assert_eq!(resume_position(Some("x=1&after=12-3")), Ok(p(12, 3)));
        assert_eq!(resume_position(Some("after=1-0&after=12-3")), Ok(p(12, 3)));
        assert_eq!(resume_position(Some("after=12%2D3")), Ok(p(12, 3)));
        assert!(resume_position(Some("after=twelve")).is_err());
        assert!(resume_position(Some("after=")).is_err());
    }
}

//! What a subscribe request asks of presence: who the subscriber is (its token's user, or with
//! no token the `user` and `name` it gave) and whether it wants the room's presence frames.

use chatflow::auth::Grant;

use super::{Feed, Here};

/// Longest user id or name a subscriber without a token may give.
pub const MAX_GIVEN: usize = 128;

/// What a subscribe request asks of presence.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Asked {
    /// Send presence frames.
    pub(super) watch: bool,
    /// The user and name the connection is present as; None stays out of the roster.
    pub(super) who: Option<(String, Option<String>)>,
}

impl Asked {
    pub(super) fn parse(query: Option<&str>, grant: Option<&Grant>) -> Asked {
        let mut asked = Asked::default();
        let (mut user, mut name) = (None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "presence" => asked.watch = value == "true" || value == "1",
                "user" => user = Some(value.into_owned()),
                "name" => name = Some(value.into_owned()),
                _ => {}
            }
        }
        let given = |v: Option<String>| {
            v.map(|v| v.trim().chars().take(MAX_GIVEN).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        asked.who = match grant {
            // With tokens, a user is who their token says, whatever the query claims.
            Some(g) => Some((g.subject.clone(), g.name.clone())),
            None => given(user).map(|u| (u, given(name))),
        };
        asked
    }
}

/// A subscriber's presence: its place in the roster and its frames, each if asked for.
#[derive(Default)]
pub struct Attendance {
    /// Held while the subscriber is connected.
    pub here: Option<Here>,
    /// Its room's presence frames.
    pub feed: Option<Feed>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatflow::auth::RoomSet;

    fn grant(sub: &str, name: Option<&str>) -> Grant {
        Grant {
            subject: sub.to_owned(),
            user_id: None,
            name: name.map(str::to_owned),
            publish: RoomSet::default(),
            subscribe: RoomSet::default(),
            expires_at: 0,
        }
    }

    #[test]
    fn a_token_says_who_is_present_whatever_the_query_claims() {
        let g = grant("alice", Some("Alice"));
        let asked = Asked::parse(Some("user=mallory&name=M&presence=true"), Some(&g));
        assert!(asked.watch);
        assert_eq!(asked.who, Some(("alice".into(), Some("Alice".into()))));
    }

    #[test]
    fn without_a_token_the_given_user_is_present_and_none_stays_out() {
        let asked = Asked::parse(Some("user=bob&name=Bob%20B"), None);
        assert_eq!(asked.who, Some(("bob".into(), Some("Bob B".into()))));
        assert!(!asked.watch);
        assert_eq!(Asked::parse(Some("after=1.0"), None), Asked::default());
        assert_eq!(Asked::parse(Some("user=%20"), None).who, None);
        let long = "x".repeat(500);
        let asked = Asked::parse(Some(&format!("user={long}")), None);
        assert_eq!(asked.who.unwrap().0.len(), MAX_GIVEN);
    }
}

//! A CloudWatch dashboard for a ChatRoomSet's queues, as the original system's
//! `monitoring/cloudwatch.json` showed them: depth, in flight, age of the oldest message, and sent,
//! received and deleted per room. SQS publishes these metrics itself, so the dashboard works with
//! nothing else deployed.

use chatflow::rooms::{Layout, QueueNaming, RoomRange};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::ChatRoomSet;
use crate::desired::{queue_layout, queue_prefix};

/// Queues per graph: more lines than this are unreadable, and CloudWatch caps metrics per graph.
pub const QUEUES_PER_GRAPH: usize = 100;

/// The SQS metrics shown, each with its statistic and title.
const METRICS: [(&str, &str, &str); 6] = [
    (
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
        "Messages waiting",
    ),
    (
        "ApproximateNumberOfMessagesNotVisible",
        "Maximum",
        "Messages in flight",
    ),
    (
        "ApproximateAgeOfOldestMessage",
        "Maximum",
        "Age of the oldest message (s)",
    ),
    ("NumberOfMessagesSent", "Sum", "Messages sent"),
    ("NumberOfMessagesReceived", "Sum", "Messages received"),
    ("NumberOfMessagesDeleted", "Sum", "Messages deleted"),
];

/// Why no dashboard can be made for a set.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The spec's rooms or prefix are invalid, as the operator would also report.
    #[error("{0}")]
    Spec(String),
    /// Neither the spec nor the caller names a region.
    #[error("the set names no spec.queues.region: give one")]
    NoRegion,
}

/// A set's queues as the dashboard shows them.
struct SetQueues<L> {
    rooms: RoomRange,
    /// Each queue's key (its first room) and name, in room order.
    names: Vec<(u32, String)>,
    /// How rooms map to queues, in words.
    note: String,
    /// A queue's line label, by its key.
    label: L,
    /// Rooms per queue.
    per_queue: u32,
}

fn set_queues(crs: &ChatRoomSet) -> Result<SetQueues<impl Fn(u32) -> String>, DashboardError> {
    let spec = &crs.spec;
    let rooms = RoomRange::new(spec.rooms.start, spec.rooms.end)
        .map_err(|e| DashboardError::Spec(format!("spec.rooms: {e}")))?;
    let layout = queue_layout(crs).map_err(DashboardError::Spec)?;
    let naming = QueueNaming::parse(&queue_prefix(crs))
        .map_err(|e| DashboardError::Spec(format!("spec.queues.prefix: {e}")))?
        .with_layout(layout, rooms.start());
    let names: Vec<(u32, String)> = naming
        .queue_keys(rooms)
        .into_iter()
        .map(|room| naming.queue_name(room).map(|n| (room, n)))
        .collect::<Result<_, _>>()
        .map_err(|e| DashboardError::Spec(format!("queue names: {e}")))?;
    let prefix = naming.name_prefix();
    let note = match layout {
        Layout::PerRoom => format!("one SQS FIFO queue each: `{prefix}room-{{id}}.fifo`"),
        Layout::Buckets { rooms } => format!(
            "{} SQS FIFO queues of {rooms} rooms each: `{prefix}rooms-{{first}}-{{last}}.fifo`",
            names.len()
        ),
    };
    let per_queue = layout.rooms_per_queue();
    let end = rooms.end();
    let label = move |room: u32| match layout {
        Layout::PerRoom => format!("room {room}"),
        Layout::Buckets { .. } => {
            format!(
                "rooms {room}–{}",
                room.saturating_add(per_queue - 1).min(end)
            )
        }
    };
    Ok(SetQueues {
        rooms,
        names,
        note,
        label,
        per_queue,
    })
}

/// The dashboard body (the `--dashboard-body` of `aws cloudwatch put-dashboard`) for `crs`'s
/// queues in `region` (the spec's region wins).
pub fn dashboard(crs: &ChatRoomSet, region: Option<&str>) -> Result<Value, DashboardError> {
    let spec = &crs.spec;
    let region = spec
        .queues
        .region
        .as_deref()
        .or(region)
        .ok_or(DashboardError::NoRegion)?;
    let SetQueues {
        rooms,
        names,
        note,
        label,
        per_queue,
    } = set_queues(crs)?;
    let set = format!("{}/{}", crs.namespace().unwrap_or_default(), crs.name_any());
    let mut widgets = vec![json!({
        "type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
        "properties": {"markdown": format!(
            "# ChatFlow {set}\nRooms {}–{}, {note}.",
            rooms.start(), rooms.end()
        )}
    })];
    let mut y = 2;
    for (metric, stat, title) in METRICS {
        for (part, chunk) in names.chunks(QUEUES_PER_GRAPH).enumerate() {
            let lines: Vec<Value> = chunk
                .iter()
                .map(|(room, queue)| {
                    json!(["AWS/SQS", metric, "QueueName", queue, {"label": label(*room)}])
                })
                .collect();
            let title = if names.len() > QUEUES_PER_GRAPH {
                let first = chunk[0].0;
                let last = chunk[chunk.len() - 1]
                    .0
                    .saturating_add(per_queue - 1)
                    .min(rooms.end());
                format!("{title}, rooms {first}–{last}")
            } else {
                title.to_owned()
            };
            // Two graphs a line, each half the dashboard's 24 columns.
            widgets.push(json!({
                "type": "metric", "x": (part % 2) * 12, "y": y, "width": 12, "height": 6,
                "properties": {
                    "title": title, "region": region, "view": "timeSeries", "stacked": false,
                    "stat": stat, "period": 60, "metrics": lines,
                    "legend": {"position": if chunk.len() > 10 { "hidden" } else { "bottom" }}
                }
            }));
            if part % 2 == 1 {
                y += 6;
            }
        }
        y += if names.len().div_ceil(QUEUES_PER_GRAPH) % 2 == 1 {
            6
        } else {
            0
        };
    }
    Ok(json!({ "widgets": widgets }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ChatRoomSetSpec;

    fn set(start: u32, end: u32, region: Option<&str>) -> ChatRoomSet {
        let mut spec: ChatRoomSetSpec = serde_json::from_value(json!({
            "rooms": {"start": start, "end": end},
            "producer": {"image": "p"}, "consumer": {"image": "c"},
            "queues": {"prefix": "chat-"}
        }))
        .unwrap();
        spec.queues.region = region.map(str::to_owned);
        let mut crs = ChatRoomSet::new("chat", spec);
        crs.metadata.namespace = Some("team".into());
        crs
    }

    fn metric_widgets(body: &Value) -> Vec<&Value> {
        body["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["type"] == "metric")
            .collect()
    }

    #[test]
    fn every_room_queue_gets_every_metric_in_the_sets_region() {
        let body = dashboard(&set(1, 20, Some("eu-west-1")), Some("us-east-1")).unwrap();
        let widgets = metric_widgets(&body);
        assert_eq!(widgets.len(), METRICS.len());
        for w in &widgets {
            let p = &w["properties"];
            assert_eq!(p["region"], "eu-west-1", "the spec's region wins");
            let lines = p["metrics"].as_array().unwrap();
            assert_eq!(lines.len(), 20);
            assert_eq!(lines[0][0], "AWS/SQS");
            assert_eq!(lines[0][2], "QueueName");
            assert_eq!(lines[0][3], "chat-room-1.fifo");
            assert_eq!(lines[19][3], "chat-room-20.fifo");
        }
        let names: Vec<&str> = widgets
            .iter()
            .map(|w| w["properties"]["metrics"][0][1].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"ApproximateAgeOfOldestMessage"),
            "{names:?}"
        );
    }

    #[test]
    fn buckets_get_a_line_per_queue_labelled_by_its_rooms() {
        let mut crs = set(1, 20, Some("eu-west-1"));
        crs.spec.queues.layout = crate::crd::QueueLayout::Buckets;
        crs.spec.queues.rooms_per_bucket = Some(7);
        let body = dashboard(&crs, None).unwrap();
        let lines = metric_widgets(&body)[0]["properties"]["metrics"].clone();
        let lines = lines.as_array().unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1][3], "chat-rooms-8-14.fifo");
        assert_eq!(lines[2][4]["label"], "rooms 15–20");
    }

    #[test]
    fn large_sets_are_split_into_readable_graphs_that_fit_the_grid() {
        let body = dashboard(&set(1, 250, None), Some("us-east-1")).unwrap();
        let widgets = metric_widgets(&body);
        assert_eq!(widgets.len(), METRICS.len() * 3);
        let mut cells = std::collections::HashSet::new();
        for w in &widgets {
            let n = w["properties"]["metrics"].as_array().unwrap().len();
            assert!(n <= QUEUES_PER_GRAPH, "{n} lines in one graph");
            let (x, width) = (w["x"].as_u64().unwrap(), w["width"].as_u64().unwrap());
            assert!(x + width <= 24, "outside CloudWatch's 24 columns");
            assert!(
                cells.insert((x, w["y"].as_u64().unwrap())),
                "two graphs in one place"
            );
        }
        assert_eq!(
            widgets[2]["properties"]["title"],
            "Messages waiting, rooms 201–250"
        );
    }

    #[test]
    fn a_region_is_required() {
        assert!(matches!(
            dashboard(&set(1, 2, None), None),
            Err(DashboardError::NoRegion)
        ));
    }
}

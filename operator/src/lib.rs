//! ChatFlow operator: the `ChatRoomSet` resource and its reconciler, which keeps one SQS FIFO
//! queue per room, a producer Deployment, and one consumer Deployment per shard of rooms.

pub mod autoscale;
pub mod cloudwatch;
pub mod conditions;
pub mod crd;
pub mod desired;
pub mod metrics;
pub mod operator;
pub mod reconcile;
pub mod status;

pub use crd::{ChatRoomSet, ChatRoomSetSpec, ChatRoomSetStatus};
pub use operator::{OperatorConfig, OperatorHandle, start};

/// The CustomResourceDefinition as YAML, exactly as `crdgen` writes it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&ChatRoomSet::crd()).expect("the CRD serializes")
}

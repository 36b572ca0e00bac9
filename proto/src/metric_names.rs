//! The CloudWatch contract between the metrics sidecar, which publishes, and the
//! autoscaler, which reads (and publishes its decision): the default namespace, the metric
//! names and the one dimension. Every datum is a `Count` with the `QueueName` dimension.

/// `CLOUDWATCH_NAMESPACE` when unset.
pub const DEFAULT_NAMESPACE: &str = "Euglena/RabbitMQ";

/// Messages ready in the input queue.
pub const QUEUE_DEPTH: &str = "QueueDepth";
/// Tasks running across live agents.
pub const IN_FLIGHT: &str = "InFlight";
/// Live agents.
pub const WORKERS: &str = "Workers";
/// Live agents running at least one task.
pub const BUSY_WORKERS: &str = "BusyWorkers";
/// Task slots running a task across live agents (each agent has `AGENT_CONCURRENCY`).
pub const BUSY_SLOTS: &str = "BusySlots";
/// Task slots of live agents, busy or free.
pub const TOTAL_SLOTS: &str = "TotalSlots";
/// Messages in the dead-letter queue.
pub const DEAD_LETTER_DEPTH: &str = "DeadLetterDepth";
/// The autoscaler's decision (Lambda mode).
pub const DESIRED_WORKERS: &str = "DesiredWorkers";

/// The dimension every datum carries: the input queue's name.
pub const QUEUE_NAME: &str = "QueueName";

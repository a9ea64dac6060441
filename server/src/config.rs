//! The standalone server's options: the producer's flags, the consumer's from the environment.

use chatflow::config::Backend;
use chatflow_consumer::ConsumerConfig;
use chatflow_producer::ProducerConfig;
use clap::{CommandFactory, FromArgMatches, Parser};

/// Both halves' configuration, sharing one listen address and one set of rooms.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address, rooms, queue backend and every ingest option.
    pub producer: ProducerConfig,
    /// Fan-out options (CONSUMER_POLLERS, SUBSCRIBER_BUFFER, DEDUP_MEMORY, MAX_SUBSCRIBERS).
    pub consumer: ConsumerConfig,
}

impl ServerConfig {
    /// Parses the command line and the environment; exits with usage on bad input, as clap does.
    pub fn parse() -> Self {
        Self::parse_from(std::env::args_os())
    }

    /// Parses `args` (the first is the program name) and the environment.
    pub fn parse_from<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        // The producer's flags, but embedded queues unless told otherwise: the point of a
        // standalone server is to need nothing else.
        let command = ProducerConfig::command()
            .name("chatflow-server")
            .about(
                "ChatFlow standalone: /chat and /subscribe on one address, the chat page at /; \
                 fan-out options come from the consumer's environment variables",
            )
            .mut_arg("queue_backend", |a| a.default_value("embedded"));
        let matches = command.get_matches_from(args);
        let producer = ProducerConfig::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        Self::from_producer(producer)
    }

    /// The consumer half for `producer`'s rooms and queues, its own options from the environment.
    pub fn from_producer(producer: ProducerConfig) -> Self {
        let mut consumer = ConsumerConfig::parse_from(["chatflow-server"]);
        consumer.listen_addr = producer.listen_addr;
        consumer.server_id = producer.server_id.clone();
        consumer.queue = producer.queue.clone();
        consumer.shutdown_grace_secs = producer.shutdown_grace_secs;
        consumer.auth = producer.auth.clone();
        if consumer.queue.queue_backend == Backend::Embedded {
            // The embedded queue dies with the process: no predecessor left a backlog to hold.
            consumer.resume_hold_secs = 0;
        }
        ServerConfig { producer, consumer }
    }

    /// Defaults for in-process use (tests): embedded queues, loopback, an ephemeral port.
    pub fn local(rooms_start: u32, rooms_end: u32) -> Self {
        Self::from_producer(ProducerConfig::local(rooms_start, rooms_end))
    }
}

//! Integration tests of the gateway's HTTP API (ARCHITECTURE §2) against the local Redis and
//! RabbitMQ. Every test starts its own in-process gateway with its own key prefix and
//! queue (see `testkit::Harness`), so they run in parallel.

mod admin;
mod auth;
mod broker;
mod claims;
mod common;
mod edge;
mod events;
mod exhaustion;
mod idempotency;
mod jwks;
mod limits;
mod mcp;
mod openapi;
mod quota;
mod ready;
mod reconcile;
mod tasks;
mod undo;
mod validation;
mod webhooks;

//! The store against the local Redis (`REDIS_URL`), each test on a key prefix of its own:
//! what each script writes, refuses and answers, one file per phase as in `src/store/`.
//! What the agent or the gateway do with the answers is tested in their crates.

mod park;
mod read;
mod readmit;
mod reconcile;
mod run;
mod submit;
mod support;
mod take_over;

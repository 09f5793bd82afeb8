//! Warden's integration tests: the shipped rules against the fake JobManager with the real daemon, bad input,
//! the daemon's state and guard, and the command line.

mod support;
mod support_pg;

mod authoring;
mod bad_input;
mod checkpoints;
mod cli;
mod daemon;
mod events;
mod explain;
mod fanout;
mod flink_ha;
mod fuzz;
mod ha;
mod inhibit;
mod notify;
mod operator;
mod ownership;
mod reload_time;
mod rescale;
mod rules;
mod server;
mod store;
mod upgrade;
mod watch;
mod yarn;

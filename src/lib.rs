//! # Warden
//!
//! A small daemon that keeps Apache Flink jobs alive. Operators describe *what to poll* in YAML probes, decide
//! *what it means* in Rhai rules, and Warden carries out the *actions*: alert, relaunch a job with a command,
//! write a log line. Rules travel between teams as packs.
//!
//! ## Layout
//!
//! The data flows one way: probes → observations → rules → requested actions → dispatcher → actions → notify →
//! journal. A module never reaches back up the pipe; the values that travel along it live in [`model`].
//!
//! ```text
//! src/main.rs, src/cli/   the `warden` binary: argument parsing and one file per command (not part of this library)
//! crates/fake-flink/      the fake JobManager for tests, benchmarks and `warden demo` (not part of this library)
//! ```
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | `warden.yaml`: serde structs (field docs are the user reference), loading with every error at once as `file:line:col`, secrets, [`config::state_dir`] (the one way every command finds the state directory) |
//! | [`config::yaml`] | the one place that parses YAML (values + positions) |
//! | [`pack`] | rule packs: `pack.yaml` (semver, Warden range, dependencies), parameters, probes, `.rhai` rules, Rhai modules; the shipped Flink pack is embedded; [`pack::package`] makes and installs `.tar.gz` packages |
//! | [`plan`] | load → validate → compile: turns config + packs into the immutable set of probe jobs and compiled rules |
//! | [`schedule`] | `every:` and cron schedules; skipped-run accounting; the grid that first due times are put on, so that a daemon's polls share their wake-ups |
//! | [`fetch`] | one HTTP client per TLS setting, auth, timeouts, body cap, the body parsed once into a [`model::Doc`] → [`model::Observation`] |
//! | [`fetch_pages`] | `request.paginate: k8s`: a Kubernetes list followed through `metadata.continue`, its pages' items merged |
//! | [`script`] | the Rhai engine (limits, wall clock), the API rules see, JSON ↔ Rhai, pack modules for `import` |
//! | [`evaluate`] | the one evaluation path: an observation through a probe's rules, used by the daemon, `test`, `eval` and `replay` |
//! | [`model`] | what travels along the pipe (observations, requests, alert records, planned actions), the parsed JSON of an answer ([`model::Doc`], read in place by rules) and the domain enums (restart strategy/step/result, journal action kinds) |
//! | [`dispatch`] | dedup keys, `for`, cooldown with exponential backoff, resolution, restart-storm guard, dry run |
//! | [`action`] | built-in actions and the executor: alert log with rotation ([`action::log`]), commands ([`action::command`]; left-over ones after a crash: [`action::leftover`]), JSON merge patches of a target's resources, e.g. the Flink Kubernetes Operator's nonces ([`action::patch`]), decision records, why a command ran or a job was restarted ([`action::decision`], shown by `warden explain`), restarts from a savepoint or retained checkpoint ([`action::restart`]: journalled step by step, one owner with a lease, resumable, exactly once), rescales in place on the adaptive scheduler or through a savepoint restart ([`action::rescale`]: clamped to the job's bounds, never next to a restart of the job), concurrency limits ([`action::limits`]) |
//! | [`notify`] | notification channels (e-mail, Slack, file, plugins), routing, inhibition ([`notify::inhibit`]), grouping, silences, outbox |
//! | [`store`] | SQLite (default) or PostgreSQL (`store.postgres`, fenced by the leader lease) on its own thread, never blocking async workers: journal, rule state, dispatcher state (one transaction per step), guard resets, restart records (the per-job lock, with owner and lease), savepoint history; [`store::schema`]: versioned migrations; [`store::retention`]: pruning; [`store::lock`]: one daemon per state directory |
//! | [`runtime`] | the daemon: one task per probe × target (on the monotonic clock, due on the daemon's grid; a `for_each: job` probe's task polls each job of the target, a bounded number at a time, and merges the tick's verdicts per rule), rules evaluated on blocking threads, at most one per core at a time (a slot given back while a follow-up request waits), the dispatcher task, hot reload (an immutable generation swapped atomically, notifier included), pushed events judged by `events:` probes ([`runtime::events`]), reloads when a target's `file:` secret is rotated, take-over of orphaned restarts, pruning, graceful shutdown (a second signal ends it at once); with a PostgreSQL store everything that acts belongs to a leader's *term* (started when the lease is taken, stopped the instant it is lost); [`runtime::status`]: what it knows about itself, for the server |
//! | [`ha`] | an HA pair on a PostgreSQL store: the lease row with its growing epoch (fencing token), the election task (the leader renews and steps down the instant its lease runs out; the standby retries), `warden_members` (the peer), the handover of a predecessor's restarts, and target sharding over more instances on paper ([`ha::shard`], simulated) |
//! | [`server`] | Warden's own HTTP server: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/api/status`, `/api/history`, `POST /-/reload`, `POST /api/events` (checks pushed events and hands them to the daemon through a channel), the status page; reads [`runtime::status`] |
//! | [`report`] | `warden report`: an inventory across targets (jobs, Flink version, checkpointing, last checkpoint, state size and trend, restarts in the last day), asked of each JobManager directly |
//! | [`reload`] | watching `warden.yaml` and pack directories (debounced, polling mode), SIGHUP |
//! | [`ruletest`] | rules on simulated time: `warden test`, `warden eval`, `warden replay` |
//! | [`flink`] | Flink REST knowledge: root cause across 1.x/2.x, the typed REST calls of restarts ([`flink::client`]), in-place rescaling: whether a cluster can, the resource-requirements PUT and its verification ([`flink::rescale`]) |
//! | [`clock`], [`event`], [`diag`] | the one clock, progress events, diagnostics |

pub mod action;
pub mod clock;
pub mod config;

pub mod diag;
pub mod dispatch;
pub mod evaluate;
pub mod event;
pub mod fetch;
pub mod fetch_pages;
pub mod flink;
pub mod ha;
pub mod model;
pub mod notify;
pub mod pack;

pub mod plan;
pub mod reload;
pub mod report;

pub mod ruletest;
pub mod runtime;
pub mod schedule;
pub mod script;
pub mod server;
pub mod store;

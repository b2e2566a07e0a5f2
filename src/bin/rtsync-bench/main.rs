//! `rtsync-bench`: a load generator that drives real WebSocket clients
//! against running sidecars and reports throughput, delivery latency (from
//! the writer's send to the subscriber's receipt, one machine's clock), loss
//! and duplicates, and the sidecars' CPU seconds and memory, as a table and
//! as one JSON line.
//!
//! Scenarios: `commit`, `fanout`, `ramp`, `presence`, `idle`, `tables`,
//! `records`, `edit-latency`, `views` (see `--help`). Sidecars must run with `RTS_AUTH=none`, or pass `--secret`.
//! `--deflate` makes every connection offer `permessage-deflate` (and
//! inflate what comes compressed, see `wire`); `--event-bytes` pads the
//! changes of the fan-out loads to a given event size.

mod client;
mod edit_latency;
mod load;
mod polling;
mod proto;
mod ramp;
mod report;
mod scenarios;
mod views;
mod wire;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rtsync-bench", about = "Load generator for rtsync sidecars")]
pub struct Args {
    /// Sidecar WebSocket URLs (comma-separated).
    #[arg(long, default_value = "ws://127.0.0.1:4000/ws", value_delimiter = ',')]
    pub url: Vec<String>,
    /// HS256 secret to sign tokens with; without it the dev form is used.
    #[arg(long, env = "RTS_JWT_SECRET")]
    pub secret: Option<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Sidecar process ids, for CPU and memory figures (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
    /// Runtime worker threads. One is the most load per CPU-second: the
    /// generator shares the machine's cores with the servers it measures.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Offer `permessage-deflate` on every connection (as a browser does)
    /// and inflate the compressed frames that come back.
    #[arg(long, global = true)]
    pub deflate: bool,
    /// Pad the stamped changes of `fanout`/`ramp` with text so each event
    /// is about this many bytes (0: the bare stamp, about 200 bytes).
    #[arg(long, global = true, default_value_t = 0)]
    pub event_bytes: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Maximum commit throughput through the first sidecar.
    Commit {
        #[arg(long, default_value_t = 32)]
        writers: usize,
        #[arg(long, default_value_t = 16)]
        records: usize,
        /// Readers that meanwhile ask `load_records` for 250 copies of one
        /// record of `--reader-kb` KB, again and again (a read at its
        /// limits beside the commits).
        #[arg(long, default_value_t = 0)]
        readers: usize,
        #[arg(long, default_value_t = 900)]
        reader_kb: usize,
    },
    /// T tables × S subscribers × W writers at R changes/s each, spread over the sidecars.
    Fanout {
        #[arg(long, default_value_t = 10)]
        tables: usize,
        #[arg(long, default_value_t = 20)]
        subscribers: usize,
        #[arg(long, default_value_t = 2)]
        writers: usize,
        #[arg(long, default_value_t = 400)]
        rate: u64,
        /// Field-level permission classes among each table's subscribers
        /// (1 = all read every field, with the same wide changes); without
        /// it, today's one-field changes.
        #[arg(long)]
        classes: Option<usize>,
        /// `socketio`: the Socket.IO peer of `bench/socketio-peer` (or a
        /// sidecar's /socket.io/) with the same load.
        #[arg(long, value_enum, default_value_t = proto::Proto::Rtsync)]
        proto: proto::Proto,
    },
    /// The fan-out load at a rising rate until p99 passes the target or a
    /// delivery is lost: the capacity. `--proto socketio` drives the
    /// Socket.IO peer of `bench/socketio-peer` with the same load.
    Ramp {
        #[arg(long, value_enum, default_value = "rtsync")]
        proto: proto::Proto,
        #[arg(long, default_value_t = 10)]
        tables: usize,
        #[arg(long, default_value_t = 20)]
        subscribers: usize,
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Changes per second per writer of the first step.
        #[arg(long, default_value_t = 25.0)]
        start: f64,
        /// Rate factor from one step to the next.
        #[arg(long, default_value_t = 1.25)]
        factor: f64,
        /// Highest rate per writer tried.
        #[arg(long, default_value_t = 2000.0)]
        max: f64,
        #[arg(long, default_value_t = 50.0)]
        p99_ms: f64,
    },
    /// Cursor storms: one mover per table at R moves/s, S watchers each.
    Presence {
        #[arg(long, default_value_t = 10)]
        tables: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// N idle, subscribed connections on the first sidecar: memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        tables: usize,
        /// `socketio`: the connections use the sidecar's /socket.io/.
        #[arg(long, value_enum, default_value_t = proto::Proto::Rtsync)]
        proto: proto::Proto,
        /// Engine.IO long-polling sessions on /socket.io/ (one pending GET
        /// each, pings answered) instead of WebSockets.
        #[arg(long)]
        polling: bool,
    },
    /// One subscriber on each of T tables of the first sidecar, one change per second each.
    Tables {
        #[arg(long, default_value_t = 5000)]
        tables: usize,
        #[arg(long, default_value_t = 16)]
        writers: usize,
    },
    /// `load_records` page time on a table of N records (written first).
    Records {
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        #[arg(long, default_value_t = 6)]
        fields: usize,
        #[arg(long, default_value_t = 500)]
        page: usize,
    },
    /// Edit-to-screen latency on a quiet table: one writer on the first
    /// server at R edits/s, one reader on the second; p50/p99 from
    /// `record_change` sent to the event received.
    EditLatency {
        #[arg(long, value_enum, default_value_t = proto::Proto::Rtsync)]
        proto: proto::Proto,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// Filtered views: N users each following "owner = me" of a table of
    /// `records` records, `unfiltered` following the whole table, `rate`
    /// changes/s: deliveries and sidecar CPU per change (pass `--pid`).
    Views(views::ViewsShape),
}

fn main() -> Result<()> {
    let args = Args::parse();
    client::set_options(client::WireOptions {
        deflate: args.deflate,
        event_bytes: args.event_bytes,
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let before: Vec<_> = args.pid.iter().map(|p| report::proc_stats(*p)).collect();
    let mut out = scenario(&args).await?;
    out["seconds"] = args.duration.into();
    out["deflate"] = args.deflate.into();
    out["eventBytes"] = args.event_bytes.into();
    if !args.pid.is_empty() {
        out["processes"] = report::proc_delta(&args.pid, &before);
    }
    if !args.json {
        if let Some(obj) = out.as_object() {
            for (k, v) in obj {
                println!("{k:<24} {v}");
            }
        }
    }
    println!("{out}");
    Ok(())
}

/// Runs the scenario the command line names; its JSON report.
async fn scenario(args: &Args) -> Result<serde_json::Value> {
    Ok(match args.scenario.clone() {
        Scenario::Commit {
            writers,
            records,
            readers,
            reader_kb,
        } => scenarios::commit(args, writers, records, readers, reader_kb).await?,
        Scenario::Fanout {
            tables,
            subscribers,
            writers,
            rate,
            classes,
            proto,
        } => {
            let shape = scenarios::Shape {
                tables,
                subscribers,
                writers,
                classes,
            };
            scenarios::fanout(args, proto, &shape, rate).await?
        }
        Scenario::Ramp {
            proto,
            tables,
            subscribers,
            writers,
            start,
            factor,
            max,
            p99_ms,
        } => {
            let r = ramp::Ramp {
                proto,
                shape: scenarios::Shape {
                    tables,
                    subscribers,
                    writers,
                    classes: None,
                },
                start,
                factor,
                max,
                p99_ms,
            };
            ramp::ramp(args, &r).await?
        }
        Scenario::Presence {
            tables,
            subscribers,
            rate,
        } => scenarios::presence(args, tables, subscribers, rate).await?,
        Scenario::Idle {
            connections,
            tables,
            proto,
            polling,
        } => {
            let pid = args.pid.first().copied();
            let proto = (!polling).then_some(proto);
            scenarios::idle(args, proto, connections, tables, pid).await?
        }
        Scenario::Tables { tables, writers } => scenarios::tables(args, tables, writers).await?,
        Scenario::Records {
            records,
            fields,
            page,
        } => scenarios::records(args, records, fields, page).await?,
        Scenario::EditLatency { proto, rate } => {
            edit_latency::edit_latency(args, proto, rate).await?
        }
        Scenario::Views(shape) => views::views(args, &shape).await?,
    })
}

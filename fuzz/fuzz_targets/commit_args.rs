//! Commit arguments: any frame's `data` as a `record_change` must become a
//! validated commit (whose encoded arguments fit the event limit) or a
//! protocol error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsync::protocol::codec::decode_frame;
use rtsync::protocol::messages::{parse, RecordChangeReq};
use rtsync::store::commit::CommitLimits;

fuzz_target!(|data: &[u8]| {
    let limits = CommitLimits {
        max_changes: 1000,
        max_event_bytes: 64 * 1024,
    };
    for text in [false, true] {
        let Ok(frame) = decode_frame(data, text) else {
            continue;
        };
        let Ok(req) = parse::<RecordChangeReq>("record_change", frame.data) else {
            continue;
        };
        let _ = req.into_commit("fuzz-user", "fuzz-conn", limits);
    }
});

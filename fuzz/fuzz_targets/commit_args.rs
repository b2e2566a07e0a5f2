//! Commit arguments: any frame's `data` as a `record_change` must become a
//! validated change (whose encoded arguments fit the event limit) or a
//! protocol error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsync::change::{ChangeLimits, ChangeRequest};
use rtsync::protocol::codec::decode_frame;
use rtsync::protocol::messages::parse;

fuzz_target!(|data: &[u8]| {
    let limits = ChangeLimits {
        max_changes: 1000,
        max_event_bytes: 64 * 1024,
        max_record_bytes: 4 << 20,
        answer_bytes: 1 << 20,
    };
    for text in [false, true] {
        let Ok(frame) = decode_frame(data, text) else {
            continue;
        };
        let Ok(req) = parse::<ChangeRequest>("record_change", frame.data) else {
            continue;
        };
        let _ = req.by_client("fuzz-user", "fuzz-conn").validate(limits);
    }
});

//! Client frames: any bytes, as MessagePack and as JSON, must decode to a
//! frame or a `bad_request`, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsync::protocol::codec::{decode_frame, salvage_rid};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data, false);
    let _ = decode_frame(data, true);
    let _ = salvage_rid(data, false);
});

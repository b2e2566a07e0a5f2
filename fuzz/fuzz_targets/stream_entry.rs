//! Stream entries written by other services: any field set must decode to
//! a ChangeEvent or a skip reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsync::change::{ChangeEvent, StreamId};

const NAMES: [&str; 10] = [
    "type", "entityType", "entityId", "userId", "version", "changes", "metadata", "baseId", "origin", "tableId",
];

fuzz_target!(|data: &[u8]| {
    // Layout: [id length][id][name index][value length][value]...
    let Some((&id_len, rest)) = data.split_first() else { return };
    let id_len = (id_len as usize).min(rest.len());
    let (id, mut rest) = rest.split_at(id_len);
    let id = String::from_utf8_lossy(id);
    let mut fields = Vec::new();
    while let [name, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (value, tail) = tail.split_at(len);
        fields.push((NAMES[*name as usize % NAMES.len()].to_owned(), value.to_vec()));
        rest = tail;
    }
    let Some(id) = StreamId::parse(&id) else { return };
    let _ = ChangeEvent::from_entry(id, &fields, Some("t"));
});

//! Presence rules. For now: the fixed color palette. A user's color is
//! derived from their id, so it is stable across sidecars and reconnects.

/// Twelve colors that stay distinct for common color blindness types.
pub const PALETTE: [&str; 12] = [
    "#E6194B", "#3CB44B", "#4363D8", "#F58231", "#911EB4", "#42D4F4", "#F032E6", "#BFEF45",
    "#469990", "#9A6324", "#800000", "#000075",
];

pub fn color_for(user_id: &str) -> &'static str {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in user_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE[(h as usize) % PALETTE.len()]
}

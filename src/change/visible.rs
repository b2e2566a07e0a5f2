//! Which fields a reader may see, as the store's functions are told it:
//! the fields hidden from it, or the only ones it may read. Plain data, so
//! that the change and store layers can pass a reader's view on without
//! knowing grants (`grant::ReadMask::visible` makes one).

/// A reader's view of a table's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visible<'a> {
    /// Every field but these (sorted).
    AllBut(&'a [String]),
    /// Only these (sorted).
    Only(&'a [String]),
}

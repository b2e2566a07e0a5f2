//! The set of fields one permission class may read, in a canonical form:
//! two grants that hide the same fields make equal masks, so the hub can
//! group subscribers by it and encode once per class.

/// Readable fields: every field but the exceptions, or (when fields are
/// hidden by default) only the exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadMask {
    default_readable: bool,
    /// Sorted, without duplicates.
    exceptions: Box<[String]>,
}

impl ReadMask {
    /// The mask, or `None` when it hides nothing.
    pub fn new(default_readable: bool, mut exceptions: Vec<String>) -> Option<ReadMask> {
        if default_readable && exceptions.is_empty() {
            return None;
        }
        exceptions.sort();
        exceptions.dedup();
        Some(ReadMask {
            default_readable,
            exceptions: exceptions.into_boxed_slice(),
        })
    }

    /// The fields it hides (every field but these is readable), or `None`
    /// when fields are hidden by default.
    pub fn hidden(&self) -> Option<&[String]> {
        self.default_readable.then_some(&*self.exceptions)
    }

    /// The only fields it lets through, or `None` when fields are readable
    /// by default.
    pub fn only_readable(&self) -> Option<&[String]> {
        (!self.default_readable).then_some(&*self.exceptions)
    }

    /// Its view, as the store's functions are told it.
    pub fn visible(&self) -> crate::change::Visible<'_> {
        if self.default_readable {
            crate::change::Visible::AllBut(&self.exceptions)
        } else {
            crate::change::Visible::Only(&self.exceptions)
        }
    }

    pub fn readable(&self, field: &str) -> bool {
        let listed = self
            .exceptions
            .binary_search_by(|f| f.as_str().cmp(field))
            .is_ok();
        listed != self.default_readable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hiding_nothing_is_no_mask() {
        assert!(ReadMask::new(true, vec![]).is_none());
        assert!(ReadMask::new(false, vec![]).is_some(), "hides everything");
    }

    #[test]
    fn the_same_fields_in_any_order_are_one_mask() {
        let a = ReadMask::new(true, vec!["b".into(), "a".into()]);
        let b = ReadMask::new(true, vec!["a".into(), "b".into(), "a".into()]);
        assert_eq!(a, b);
        let m = a.unwrap();
        assert!(!m.readable("a") && !m.readable("b") && m.readable("c"));
    }
}

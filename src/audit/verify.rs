//! `rtsync audit verify`: walks the audit stream oldest first and checks
//! the hash chain `lua/audit.lua` writes (its doc block defines the hashed
//! content byte-exactly): each entry's `hash` recomputed from its fields,
//! each `prev` equal to the hash before it, and the chain's head equal to
//! the last entry's hash (entries deleted at the end). The first break is
//! reported. The oldest kept entry's `prev` is taken as given: entries
//! before it were trimmed by `RTS_AUDIT_RETENTION` (or never existed).
//!
//! Data flow: `main` → [`run`] → `store::audit::range` in chunks →
//! [`Chain::push`] per entry → [`Chain::finish`] with the head.

use sha1::{Digest, Sha1};

use crate::store::audit::{head, range, StoredEntry};
use crate::store::{Store, StoreError};

/// Entries read per XRANGE.
const CHUNK: usize = 500;

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error(
        "entry {id} is not a chained audit entry (its first field must be prev and its last hash)"
    )]
    Malformed { id: String },
    #[error("entry {id} was changed: its hash is {stored} but its content hashes to {computed}")]
    Edited {
        id: String,
        stored: String,
        computed: String,
    },
    #[error("entry {id} does not follow {before}: its prev is {prev}, the entry before hashes to {expected} (an entry was removed or inserted between them)")]
    Unlinked {
        id: String,
        before: String,
        prev: String,
        expected: String,
    },
    #[error("the chain's head is {head} but the last entry {id} hashes to {last}: entries after {id} were removed, or {id} was not appended by rtsync_audit")]
    Truncated {
        id: String,
        head: String,
        last: String,
    },
    #[error("the chain's head is {head} but the audit stream is empty: its entries were removed")]
    Emptied { head: String },
}

/// A chain read so far.
#[derive(Debug, Default)]
pub struct Chain {
    count: u64,
    first: Option<(String, String)>,
    last: Option<(String, String)>,
}

/// The hash of an entry's fields (up to, not including, `hash`): SHA-1 of
/// the netstrings of every name and value, in order.
pub fn content_hash(fields: &[(String, String)]) -> String {
    let mut sha = Sha1::new();
    for (name, value) in fields {
        for s in [name, value] {
            sha.update(s.len().to_string().as_bytes());
            sha.update(b":");
            sha.update(s.as_bytes());
            sha.update(b",");
        }
    }
    hex::encode(sha.finalize())
}

impl Chain {
    /// Checks the next entry (oldest first).
    pub fn push(&mut self, entry: &StoredEntry) -> Result<(), Break> {
        let malformed = || Break::Malformed {
            id: entry.id.clone(),
        };
        let (content, stored) = match entry.fields.split_last() {
            Some(((name, hash), content)) if name == "hash" => (content, hash),
            _ => return Err(malformed()),
        };
        let prev = match content.first() {
            Some((name, prev)) if name == "prev" => prev,
            _ => return Err(malformed()),
        };
        let computed = content_hash(content);
        if &computed != stored {
            return Err(Break::Edited {
                id: entry.id.clone(),
                stored: stored.clone(),
                computed,
            });
        }
        if let Some((before, expected)) = &self.last {
            if prev != expected {
                return Err(Break::Unlinked {
                    id: entry.id.clone(),
                    before: before.clone(),
                    prev: prev.clone(),
                    expected: expected.clone(),
                });
            }
        } else {
            self.first = Some((entry.id.clone(), prev.clone()));
        }
        self.last = Some((entry.id.clone(), stored.clone()));
        self.count += 1;
        Ok(())
    }

    /// The hash of the last entry checked.
    pub fn last_hash(&self) -> Option<&str> {
        self.last.as_ref().map(|(_, h)| h.as_str())
    }

    /// Checks the end against the head key and says what was verified.
    pub fn finish(self, head: Option<&str>) -> Result<String, Break> {
        let Some((last_id, last_hash)) = self.last else {
            if let Some(head) = head {
                return Err(Break::Emptied {
                    head: head.to_owned(),
                });
            }
            return Ok("ok, 0 entries".to_owned());
        };
        if let Some(head) = head.filter(|h| *h != last_hash) {
            return Err(Break::Truncated {
                id: last_id,
                head: head.to_owned(),
                last: last_hash,
            });
        }
        let (first_id, first_prev) = self.first.unwrap_or_default();
        let given = if first_prev.is_empty() {
            "the first entry ever".to_owned()
        } else {
            format!("its prev {first_prev} is taken as given: older entries were trimmed")
        };
        Ok(format!(
            "ok, {} entries, from {first_id} to {last_id} ({first_id} is {given})",
            self.count
        ))
    }
}

/// A verification that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit log: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Broken(#[from] Break),
}

/// `rtsync audit verify` against the Redis and prefix of `config`.
pub async fn run(config: &crate::config::Config) -> Result<String, VerifyError> {
    let never = tokio_util::sync::CancellationToken::new();
    let store = Store::from_config(config, 1, &never).await?;
    verify(&store).await
}

/// Verifies the whole chain: the "ok, ..." line, or the first break. The
/// head is read after the walk and must be the last entry's hash; when
/// entries were appended meanwhile (the head names one not walked yet),
/// the walk goes on from where it stopped, a few rounds at most.
pub async fn verify(store: &Store) -> Result<String, VerifyError> {
    let mut chain = Chain::default();
    let mut start = "-".to_owned();
    for _ in 0..ROUNDS {
        let walked = walk(store, &mut chain, &mut start).await?;
        let head = head(store).await?;
        let caught_up = match (&head, chain.last_hash()) {
            (None, _) => true,
            (Some(h), Some(last)) => h == last,
            (Some(_), None) => false,
        };
        if caught_up || walked == 0 {
            return Ok(chain.finish(head.as_deref())?);
        }
    }
    let head = head(store).await?;
    Ok(chain.finish(head.as_deref())?)
}

/// Rounds of [`verify`]'s walk while the log is being written.
const ROUNDS: usize = 5;

/// Walks from `start` to the stream's end, moving `start` past the last
/// entry checked; how many entries it checked.
async fn walk(store: &Store, chain: &mut Chain, start: &mut String) -> Result<usize, VerifyError> {
    let mut walked = 0;
    loop {
        let entries = range(store, start, "+", CHUNK, false).await?;
        for e in &entries {
            chain.push(e)?;
        }
        walked += entries.len();
        if let Some(last) = entries.last() {
            *start = format!("({}", last.id);
        }
        if entries.len() < CHUNK {
            return Ok(walked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, prev: &str, action: &str) -> StoredEntry {
        let content = vec![
            ("prev".to_owned(), prev.to_owned()),
            ("ts".to_owned(), "1".to_owned()),
            ("action".to_owned(), action.to_owned()),
        ];
        let hash = content_hash(&content);
        let mut fields = content;
        fields.push(("hash".to_owned(), hash));
        StoredEntry {
            id: id.to_owned(),
            fields,
        }
    }

    fn chain_of(n: usize) -> Vec<StoredEntry> {
        let mut out: Vec<StoredEntry> = Vec::new();
        for i in 0..n {
            let prev = out
                .last()
                .and_then(|e| e.get("hash"))
                .unwrap_or_default()
                .to_owned();
            out.push(entry(&format!("{i}-0"), &prev, "auth_failed"));
        }
        out
    }

    #[test]
    fn the_content_hash_is_sha1_of_the_fields_netstrings() {
        // sha1("4:prev,0:,") computed independently.
        let fields = [("prev".to_owned(), String::new())];
        assert_eq!(
            content_hash(&fields),
            hex::encode(Sha1::digest(b"4:prev,0:,"))
        );
    }

    #[test]
    fn an_intact_chain_is_ok() {
        let mut chain = Chain::default();
        let entries = chain_of(3);
        for e in &entries {
            assert_eq!(chain.push(e), Ok(()));
        }
        let head = entries[2].get("hash").map(str::to_owned);
        let report = chain.finish(head.as_deref()).expect("ok");
        assert!(report.starts_with("ok, 3 entries, from 0-0 to 2-0"));
    }

    #[test]
    fn an_edited_field_breaks_the_entry() {
        let mut entries = chain_of(3);
        entries[1].fields[2].1 = "record_deleted".into();
        let mut chain = Chain::default();
        assert_eq!(chain.push(&entries[0]), Ok(()));
        assert!(matches!(chain.push(&entries[1]), Err(Break::Edited { id, .. }) if id == "1-0"));
    }

    #[test]
    fn a_removed_entry_unlinks_the_next() {
        let entries = chain_of(3);
        let mut chain = Chain::default();
        assert_eq!(chain.push(&entries[0]), Ok(()));
        assert!(matches!(chain.push(&entries[2]), Err(Break::Unlinked { id, .. }) if id == "2-0"));
    }

    #[test]
    fn a_removed_last_entry_is_found_by_the_head() {
        let entries = chain_of(3);
        let mut chain = Chain::default();
        for e in &entries[..2] {
            assert_eq!(chain.push(e), Ok(()));
        }
        let head = entries[2].get("hash").map(str::to_owned);
        assert!(matches!(
            chain.finish(head.as_deref()),
            Err(Break::Truncated { .. })
        ));
    }
}

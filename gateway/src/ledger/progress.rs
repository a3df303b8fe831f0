//! Where the backfill stands, lot by lot and file by file, for the console's Reprises page. Read
//! from what the backfill already records: its lots, their members (kept after a lot is done) and
//! the members' deliveries, and the checkpoint of each input file. Nothing is written for it.
//!
//! The SQL is the same in both dialects (written once here); each dialect decodes its own
//! times (`sqlite/progress.rs`, `postgres/progress.rs`).

use chrono::{DateTime, Utc};

use super::LotState;

/// The key prefix of an input file's checkpoint (`passerelle backfill`): the value is the index
/// of the last of its dossiers read and committed to the ledger.
pub const FILE_CHECKPOINT_PREFIX: &str = "backfill:file:";

/// A lot and what became of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotProgress {
    pub lot_key: String,
    pub state: LotState,
    /// AGORA's id of the lot, once it took it.
    pub agora_lot: Option<String>,
    /// Dossiers the lot was made of.
    pub members: u64,
    /// Members still in the lot: AGORA's report line for them is not read yet.
    pub waiting: u64,
    /// Members settled and delivered (AGORA holds them), as their delivery stands now.
    pub delivered: u64,
    /// Members settled into the dead letters, as their delivery stands now.
    pub dead: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LotProgress {
    /// Members that left the lot: their line was read (delivered, dead-lettered, or released to
    /// be reconciled one by one).
    pub fn settled(&self) -> u64 {
        self.members.saturating_sub(self.waiting)
    }
}

/// One input file of `passerelle backfill`, as its checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProgress {
    /// The checkpoint's key (a hash of the file's path, size and modification time).
    pub key: String,
    /// Dossiers of the file read and committed (the index of the last one).
    pub read: u64,
    pub updated_at: DateTime<Utc>,
}

/// `$1` destination, `$2` limit: the latest lots, newest first, with their members' counts.
pub(super) const LOTS: &str = "\
    SELECT l.lot_key, l.state, l.agora_lot, l.created_at, l.updated_at, \
      count(m.dossier_id) AS members, \
      count(CASE WHEN v.lot = l.lot_key THEN 1 END) AS waiting, \
      count(CASE WHEN (v.lot IS NULL OR v.lot <> l.lot_key) AND v.status = 'delivered' \
            THEN 1 END) AS delivered, \
      count(CASE WHEN (v.lot IS NULL OR v.lot <> l.lot_key) AND v.status = 'dead' \
            THEN 1 END) AS dead \
    FROM lots l \
    LEFT JOIN lot_members m ON m.lot_key = l.lot_key \
    LEFT JOIN deliveries v ON v.dossier_id = m.dossier_id AND v.destination = l.destination \
    WHERE l.destination = $1 \
    GROUP BY l.lot_key, l.state, l.agora_lot, l.created_at, l.updated_at \
    ORDER BY l.created_at DESC, l.lot_key DESC \
    LIMIT $2";

/// `$1` limit: the input files' checkpoints, most recently advanced first.
pub(super) const INPUTS: &str = "\
    SELECT key, value, updated_at FROM checkpoints \
    WHERE substr(key, 1, 14) = 'backfill:file:' \
    ORDER BY updated_at DESC, key \
    LIMIT $1";

pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inputs_query_names_the_prefix() {
        assert_eq!(super::FILE_CHECKPOINT_PREFIX.len(), 14);
        assert!(super::INPUTS.contains(&format!("'{}'", super::FILE_CHECKPOINT_PREFIX)));
    }
}

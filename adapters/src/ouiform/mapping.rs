//! Field table.
use crate::canonical::System;
use crate::mapping::{FieldMap, MappingTable};

pub const TABLE: MappingTable = MappingTable {
    system: System::Ouiform,
    one_based: false,
    rows: ROWS,
};
const ROWS: &[FieldMap] = &[];

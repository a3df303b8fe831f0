//! Merging sources (being written).

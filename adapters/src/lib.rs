//! passerelle's translation core.
//!
//! - [`canonical`]: the canonical dossier (types, lifecycle) that every system maps to;
//! - [`rules`]: the domain rules (NIR and SIRET keys, dates, codes, blocks each state requires);
//! - [`violation`]: what a rejection says (pointer, stable rule code, detail without personal data);
//! - one module per system, each with the same files (`mod.rs` decode/encode, `model.rs` the system's
//!   own records, `mapping.rs` its field table, `tests.rs`): each named in [`sources`],
//!   and [`agora`];
//! - [`planner`]: from what AGORA has to what it should have, the operations still owed;
//! - [`sources`]: the registry of source systems, one [`sources::Source`] each;
//! - [`merge`]: several sources of one trainee on one session, one dossier;
//! - [`mapping`]: the field correspondence and trigger rules, generated from the adapters' tables;
//! - [`fuzzing`]: the bodies of the fuzz targets, which the tests also run.
//!
//! No I/O happens here: adapters read from and write to buffers the gateway hands them.

pub mod agora;
pub mod atexo_sem;
pub mod canonical;
#[cfg(test)]
pub mod example;
pub mod fuzzing;
pub mod mapping;
pub mod merge;
pub mod ouiform;
pub mod planner;
pub mod pole_emploi;
pub mod rules;
pub mod sources;
pub mod violation;

pub use canonical::{Dossier, State, System};
pub use sources::{Source, SOURCES};
pub use violation::{Rule, Violation, Violations};

//! Pollers: the systems passerelle asks rather than hears from, one module per system.
//!
//! - [`pole_emploi`]: every `pole_emploi.poll_interval_s`, the registrations of each session still
//!   open to Pôle emploi's news, merged into their dossiers through [`crate::intake`] like any
//!   inbound message.

pub mod pole_emploi;

//! drawbridge: the firmware of a hardened SMTP relay appliance.

pub mod config;
pub mod queue;
pub mod smtp;

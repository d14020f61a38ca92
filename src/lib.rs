//! drawbridge: the firmware of a hardened SMTP relay appliance.

pub mod admin;
pub mod board;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod dns;
pub mod filter;
pub mod gateway;
pub mod image;
pub mod init;
pub mod log;
pub mod net;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod relay;
pub mod sasl;
pub mod secrets;
pub mod signal;
pub mod smtp;
pub mod stats;
pub mod tls;
pub mod token;
pub mod users;

//! The stored configuration: slots on disk (`store`), the engine's candidate, commit,
//! commit confirmed, rollback and start-up rules (`engine`), and the script commands
//! (`admin`). The model, its schema, text and wire forms are the core's
//! (`crate::proto::config`). **Invariant:** a stored record is used only whole and with
//! a good HMAC, made with the token's key; a commit is durable before it is applied; the
//! running gateway reads and writes the slots on the blocking pool.

pub mod admin;
pub mod engine;
pub mod store;

//! Recipient verification callouts.

//! Transactions (KIP-98): the transaction coordinator and the markers that end a transaction
//! on its partitions.
//!
//! `markers`: how a coordinator writes a transaction's COMMIT or ABORT marker to every
//! partition it touched, on this broker or on the partitions' leaders elsewhere.

pub mod markers;

//! Talking to hosts: one OpenSSH master connection per host (`session.rs`), the one shell
//! builder (`script.rs`) and artifact transfer over SFTP (`transfer.rs`).

pub mod interactive;
pub mod script;
pub mod session;
pub mod transfer;

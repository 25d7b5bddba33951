//! Talking to hosts: one OpenSSH master connection per host (`session.rs`), the one shell
//! builder (`script.rs`) and the artifact's encodings (`transfer.rs`).

pub mod script;
pub mod session;
pub mod transfer;

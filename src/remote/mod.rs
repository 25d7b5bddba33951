//! Talking to hosts: one OpenSSH master connection per host (`session.rs`), on which worker
//! shells run the scripts (`worker.rs`), the one shell builder (`script.rs`), the artifact's
//! encodings (`transfer.rs`) and the ssh files given from outside the project (`ssh_files.rs`).

pub mod agent;
pub mod interactive;
pub mod script;
pub mod session;
pub mod ssh_files;
pub mod transfer;
pub mod worker;

//! The local artifact store under `<target-dir>/ship/`.

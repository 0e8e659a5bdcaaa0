//! Node library.

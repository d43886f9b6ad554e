//! The Weft server library.

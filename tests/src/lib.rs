//! Black-box test support for Weft.

//! nn (being written)

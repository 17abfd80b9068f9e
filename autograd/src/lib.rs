//! autograd (being written)

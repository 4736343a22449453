//! Black-box tests of a whole Natter over real sockets against a real nats-server; the tests live in `tests/`.

//! Loopback tests of the TLS layer: our client against our server over real TCP, certificates made by OpenSSL.

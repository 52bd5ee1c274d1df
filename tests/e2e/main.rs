//! End-to-end tests of Ouli: a scripted upstream, the proxy (in process or
//! the real `ouli` binary) and a raw HTTP/1.1 client, all on 127.0.0.1.

mod support;

mod cli;
mod crash;
mod hostile;
mod miss;
mod record_replay;
mod redaction;

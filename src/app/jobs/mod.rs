//! Background work off the request path: the API tokens' last-used writer, housekeeping
//! (one leader at a time) and the outside issuers' key refresher.

pub(in crate::app) mod housekeeping;
pub(in crate::app) mod remote_keys;
pub(in crate::app) mod usage;

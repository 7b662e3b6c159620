//! portcullis in-process: an Envoy proxy-wasm HTTP filter deciding every request with the
//! sidecar's own decision core (`portcullis-core`), from the bundle the sidecar serves.
//!
//! Each worker VM's root context polls the bundle over an Envoy cluster (`dispatch_http_call`
//! with `If-None-Match`, every `poll`), compiles a changed one in that callback, off the
//! request path, and swaps it in whole (`state`). Requests are decided against the current
//! bundle: an allow sets the identity headers and removes the client's own `x-auth-*` headers
//! and the credential exactly as the ext_authz answer would (`authz::answer`); a deny is the
//! same status, headers and JSON body. No bundle, or one older than `max_age`: 503.

mod config;
mod state;

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use portcullis_core::authz::answer::{
    deny_answer, headers_to_remove, identity_facts, DECISION_ID_HEADER, IDENTITY_HEADER_PREFIX,
};
use portcullis_core::authz::{AccessRequest, Decision, DecisionIds, Deny, DenyCause};
use portcullis_core::error_chain;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use config::FilterConfig;
use state::{Current, Outcome};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
}}

/// One worker VM's root: the configuration, the serving bundle, the poll in flight.
struct Root {
    config: Option<FilterConfig>,
    current: Rc<RefCell<Current>>,
    in_flight: Option<u32>,
    ids: Rc<DecisionIds>,
}

impl Root {
    fn new() -> Self {
        Root {
            config: None,
            current: Rc::new(RefCell::new(Current::new(Duration::ZERO))),
            in_flight: None,
            ids: Rc::new(DecisionIds::new()),
        }
    }

    fn poll(&mut self) {
        let Some(config) = &self.config else { return };
        if self.in_flight.is_some() {
            return;
        }
        let current = self.current.borrow();
        let mut headers = vec![
            (":method", "GET"),
            (":path", config.path.as_str()),
            (":authority", config.authority.as_str()),
        ];
        if let Some(etag) = current.etag() {
            headers.push(("if-none-match", etag));
        }
        match self.dispatch_http_call(&config.cluster, headers, None, vec![], config.timeout) {
            Ok(token) => self.in_flight = Some(token),
            Err(status) => log::warn!("cannot ask for the bundle: {status:?}"),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if self.in_flight != Some(token) {
            return;
        }
        self.in_flight = None;
        let now = self.get_current_time();
        let status = self.get_http_call_response_header(":status");
        let mut current = self.current.borrow_mut();
        let outcome = match status.as_deref() {
            Some("304") => Ok(current.not_modified(now)),
            Some("200") => {
                let etag = self.get_http_call_response_header("etag");
                let body = self
                    .get_http_call_response_body(0, body_size)
                    .unwrap_or_default();
                current
                    .received(etag, &body, now)
                    .map_err(|e| error_chain(&e))
            }
            other => Err(format!("the sidecar answered {other:?}")),
        };
        match outcome {
            Ok(Outcome::Swapped(version)) => {
                log::info!("portcullis bundle loaded: policy version {version}")
            }
            Ok(Outcome::Confirmed) => {}
            Err(why) => log::warn!("bundle refused, keeping the last good one: {why}"),
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::parse(&bytes) {
            Ok(config) => {
                self.current = Rc::new(RefCell::new(Current::new(config.max_age)));
                self.set_tick_period(config.poll);
                self.config = Some(config);
                self.poll();
                true
            }
            Err(why) => {
                log::error!("portcullis filter configuration refused: {why}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.poll();
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            current: self.current.clone(),
            ids: self.ids.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request.
struct Filter {
    current: Rc<RefCell<Current>>,
    ids: Rc<DecisionIds>,
}

impl Context for Filter {}

/// Whether the decision reads this header (as the shipped ext_authz `allowed_headers` sends):
/// the credential headers and the client's own `x-auth-*` ones.
fn is_read(name: &str, token_header: &str) -> bool {
    name == "authorization"
        || name == "cookie"
        || name.eq_ignore_ascii_case(token_header)
        || name
            .as_bytes()
            .get(..IDENTITY_HEADER_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(IDENTITY_HEADER_PREFIX.as_bytes()))
}

impl Filter {
    fn deny(&self, deny: &Deny, decision_id: &str) -> Action {
        let (status, headers, body) = deny_answer(deny, decision_id);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send_http_response(u32::from(status), headers, Some(body.as_bytes()));
        Action::Pause
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let decision_id = self.ids.next();
        let now = self.get_current_time();
        let Some(decider) = self.current.borrow().decider(now) else {
            return self.deny(&Deny::new(None, DenyCause::NoSnapshot), &decision_id);
        };
        let token_header = decider.api_token_header.as_str();
        let raw = self.get_http_request_headers_bytes();
        let pseudo = |name: &str| {
            raw.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .unwrap_or("")
        };
        let mut not_utf8 = None;
        let headers: Vec<(&str, Cow<'_, str>)> = raw
            .iter()
            .filter(|(k, _)| is_read(k, token_header))
            .map(|(k, v)| {
                // Never decoded lossily: a value that is not UTF-8 is refused as such.
                let value = std::str::from_utf8(v).unwrap_or_else(|_| {
                    not_utf8.get_or_insert(k.as_str());
                    ""
                });
                (k.as_str(), Cow::Borrowed(value))
            })
            .collect();
        let access = AccessRequest {
            method: pseudo(":method"),
            scheme: pseudo(":scheme"),
            host: pseudo(":authority"),
            path: pseudo(":path"),
            headers,
            not_utf8,
        };
        let allow = match decider.authorizer.decide_now(&access) {
            Decision::Allow(allow) => allow,
            Decision::Deny(deny) => return self.deny(&deny, &decision_id),
        };
        let facts = identity_facts(&allow);
        let names: Vec<&str> = facts.iter().map(|(name, _)| *name).collect();
        let stripping = decider.forwarding.stripping(&access, &allow);
        for name in headers_to_remove(&access, &names, &stripping) {
            self.set_http_request_header(&name, None);
        }
        for (name, value) in &facts {
            self.set_http_request_header(name, Some(value));
        }
        self.set_http_request_header(DECISION_ID_HEADER, Some(&decision_id));
        if let Some(cookie) = &stripping.cookie {
            self.set_http_request_header("cookie", Some(cookie));
        }
        Action::Continue
    }
}

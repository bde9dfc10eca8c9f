//! RFC 3261 §12 dialog state.
//!
//! A dialog is the peer-to-peer relationship an INVITE sets up: its
//! identity ([`DialogId`]: Call-ID, local tag, remote tag), the route set
//! learned from Record-Route, the remote target from Contact, and the local
//! and remote CSeq counters. A B2BUA holds one [`Dialog`] per leg: a
//! UAS-side dialog toward the caller ([`Dialog::new_uas`]) and a UAC-side
//! dialog toward the trunk ([`Dialog::new_uac`]); the two are independent
//! (SPEC F-S3) and the call logic copies only what it chooses between them.
//!
//! Inputs are plain strings the caller extracted from a parsed message:
//! URIs (`sip:bob@192.0.2.4`), name-addrs (`<sip:p1.example.com;lr>`) and
//! tags. The only URI inspection done here is what §12.2.1.1 needs to tell a
//! loose router (`;lr`) from a strict one and to strip parameters a
//! Request-URI may not carry. Nothing here reads the clock.
//!
//! Not done here: forking (several early dialogs per INVITE are simply
//! several [`Dialog`]s with different remote tags; choosing among them is
//! the call logic's job), the `sips` "secure" flag and session timers
//! (RFC 4028, F-S6).

/// The largest CSeq number (RFC 3261 §8.1.1.5: "MUST be expressible as a
/// 32-bit unsigned integer"). New local sequences start below 2**31 so that
/// they can grow.
pub const CSEQ_MAX: u32 = u32::MAX;

/// Random bytes in a new tag: 64 bits, twice the 32 bits of randomness
/// RFC 3261 §19.3 asks for, so tags stay globally unique.
const TAG_RANDOM_BYTES: usize = 8;

/// A fresh From/To tag (§19.3) from the injected RNG: 16 hex digits.
pub fn new_tag<R: rand::RngCore + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; TAG_RANDOM_BYTES];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity of a dialog (§12: Call-ID, local tag, remote tag).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID (compared case-sensitively, §20.8).
    pub call_id: String,
    /// Our tag: From tag on the UAC side, To tag on the UAS side.
    pub local_tag: String,
    /// The peer's tag: To tag on the UAC side, From tag on the UAS side.
    /// Empty for an RFC 2543 peer that sent none (§12.1.2).
    pub remote_tag: String,
}

/// Which side of the INVITE created the dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogRole {
    /// We sent the INVITE.
    Uac,
    /// We received the INVITE.
    Uas,
}

/// §12: a dialog is early after a provisional response, confirmed after a
/// 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a 1xx with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended (BYE, or an early dialog whose INVITE failed).
    Terminated,
}

/// A dialog could not be created or a request does not fit it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// Only 101–199 with a To tag and 2xx responses create dialogs (§12.1).
    #[error("status {0} does not create a dialog")]
    NoDialogStatus(u16),
    /// A provisional response without a To tag creates no dialog (§12.1).
    #[error("provisional response without a To tag")]
    MissingRemoteTag,
    /// No Contact: a dialog-creating message must carry one (§12.1.1,
    /// §12.1.2); answer 400 / treat as a failed call.
    #[error("missing Contact (remote target)")]
    MissingContact,
    /// An in-dialog request with a CSeq below the remote sequence number
    /// (§12.2.2): answer 500 (an ACK is just dropped).
    #[error("CSeq {got} is lower than the remote sequence number {remote}")]
    CSeqOutOfOrder {
        /// CSeq of the request.
        got: u32,
        /// The dialog's remote sequence number.
        remote: u32,
    },
    /// The local CSeq would exceed [`CSEQ_MAX`].
    #[error("local CSeq exhausted")]
    CSeqExhausted,
    /// The dialog is terminated.
    #[error("dialog terminated")]
    Terminated,
}

/// What a UAC-side dialog is built from: the INVITE we sent and the
/// response that created the dialog (§12.1.2).
#[derive(Clone, Debug)]
pub struct UacDialogParams<'a> {
    /// Status of the response (101–199 with a To tag, or 2xx).
    pub status: u16,
    /// Call-ID of the INVITE.
    pub call_id: &'a str,
    /// Our From tag.
    pub local_tag: &'a str,
    /// The To tag of the response (empty if absent).
    pub remote_tag: &'a str,
    /// Our From URI (or name-addr without the tag).
    pub local_uri: &'a str,
    /// The To URI of the request (or name-addr without the tag).
    pub remote_uri: &'a str,
    /// CSeq number of the INVITE.
    pub invite_cseq: u32,
    /// The Contact URI of the response: the remote target.
    pub contact: &'a str,
    /// The Record-Route values of the response, in message order, one
    /// name-addr per entry (a header with commas split into entries).
    pub record_route: &'a [&'a str],
}

/// What a UAS-side dialog is built from: the INVITE we received and the
/// tag we put in our response (§12.1.1).
#[derive(Clone, Debug)]
pub struct UasDialogParams<'a> {
    /// Status of our dialog-creating response (101–199 or 2xx).
    pub status: u16,
    /// Call-ID of the INVITE.
    pub call_id: &'a str,
    /// The To tag we chose (from the injected RNG).
    pub local_tag: &'a str,
    /// The From tag of the INVITE (empty if absent).
    pub remote_tag: &'a str,
    /// The To URI of the INVITE.
    pub local_uri: &'a str,
    /// The From URI of the INVITE.
    pub remote_uri: &'a str,
    /// CSeq number of the INVITE: the remote sequence number.
    pub invite_cseq: u32,
    /// The Contact URI of the INVITE: the remote target.
    pub contact: &'a str,
    /// The Record-Route values of the INVITE, in message order.
    pub record_route: &'a [&'a str],
    /// Where our own CSeq numbering starts (injected; §8.1.1.5 asks for
    /// less than 2**31).
    pub initial_local_cseq: u32,
}

/// The header values an in-dialog request needs (§12.2.1.1). The caller
/// serializes them; Via, Max-Forwards and Contact are its business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFields {
    /// The method, as given.
    pub method: String,
    /// The Request-URI.
    pub request_uri: String,
    /// Route header values, in order, one name-addr each. Empty: no Route.
    pub route: Vec<String>,
    /// CSeq number.
    pub cseq: u32,
    /// Call-ID.
    pub call_id: String,
    /// From value: local URI with our tag.
    pub from: String,
    /// To value: remote URI with the remote tag (none if empty).
    pub to: String,
}

/// One side's view of a dialog (§12).
#[derive(Clone, Debug)]
pub struct Dialog {
    id: DialogId,
    role: DialogRole,
    state: DialogState,
    local_uri: String,
    remote_uri: String,
    /// Our CSeq counter: the number of the last request we sent.
    local_cseq: u32,
    /// CSeq of the last INVITE we sent (ACK for 2xx reuses it, §13.2.2.4).
    last_invite_cseq: Option<u32>,
    /// The peer's last CSeq; `None` = empty (§12.1.2: a UAC's is empty
    /// until the peer sends a request).
    remote_cseq: Option<u32>,
    remote_target: String,
    /// Route set, in the order the Route header lists it.
    route_set: Vec<String>,
}

/// The URI inside a name-addr (`"Bob" <sip:b@h;lr>` → `sip:b@h;lr`), or the
/// whole value if it is a bare addr-spec.
pub fn uri_of(name_addr: &str) -> &str {
    let s = name_addr.trim();
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim(),
        _ => s,
    }
}

/// True if a SIP URI has the `lr` parameter (a loose router, RFC 3261
/// §19.1.1). URI parameters sit between the host part and any `?headers`.
pub fn is_loose_router(uri: &str) -> bool {
    uri_params(uri).any(|(name, _)| name.eq_ignore_ascii_case("lr"))
}

fn uri_params(uri: &str) -> impl Iterator<Item = (&str, &str)> {
    let without_headers = uri.split('?').next().unwrap_or(uri);
    without_headers
        .split(';')
        .skip(1)
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (p.trim(), ""),
        })
}

/// A URI fit for a Request-URI: §12.2.1.1 strict routing puts the first
/// route's URI there "stripping any parameters that are not allowed in a
/// Request-URI"; per §19.1.1 Table 1 those are `method` and the `?headers`
/// part.
pub fn request_uri_from(uri: &str) -> String {
    let without_headers = uri.split('?').next().unwrap_or(uri);
    let mut parts = without_headers.split(';');
    let mut out = String::with_capacity(without_headers.len());
    out.push_str(parts.next().unwrap_or(""));
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("method") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    out
}

fn with_tag(uri: &str, tag: &str) -> String {
    if tag.is_empty() {
        return uri.to_string();
    }
    // A bare URI with parameters would swallow the tag as a URI parameter
    // (§20.10), so it is put in angle brackets.
    if uri.contains('<') {
        format!("{uri};tag={tag}")
    } else {
        format!("<{uri}>;tag={tag}")
    }
}

impl Dialog {
    /// UAC side (§12.1.2): a dialog from a 101–199 response with a To tag
    /// (early) or a 2xx (confirmed) to our INVITE. The route set is the
    /// response's Record-Route in reverse order; the remote target is its
    /// Contact.
    pub fn new_uac(p: &UacDialogParams<'_>) -> Result<Self, DialogError> {
        let state = match p.status {
            101..=199 if p.remote_tag.is_empty() => return Err(DialogError::MissingRemoteTag),
            101..=199 => DialogState::Early,
            200..=299 => DialogState::Confirmed,
            s => return Err(DialogError::NoDialogStatus(s)),
        };
        if p.contact.trim().is_empty() {
            return Err(DialogError::MissingContact);
        }
        Ok(Self {
            id: DialogId {
                call_id: p.call_id.to_string(),
                local_tag: p.local_tag.to_string(),
                remote_tag: p.remote_tag.to_string(),
            },
            role: DialogRole::Uac,
            state,
            local_uri: p.local_uri.to_string(),
            remote_uri: p.remote_uri.to_string(),
            local_cseq: p.invite_cseq,
            last_invite_cseq: Some(p.invite_cseq),
            remote_cseq: None,
            remote_target: uri_of(p.contact).to_string(),
            route_set: p
                .record_route
                .iter()
                .rev()
                .map(|r| r.trim().to_string())
                .collect(),
        })
    }

    /// UAS side (§12.1.1): a dialog from a received INVITE and the tag we
    /// put in our 101–199 or 2xx response. The route set is the INVITE's
    /// Record-Route in order; the remote target is its Contact; the remote
    /// sequence number is the INVITE's CSeq.
    pub fn new_uas(p: &UasDialogParams<'_>) -> Result<Self, DialogError> {
        let state = match p.status {
            101..=199 => DialogState::Early,
            200..=299 => DialogState::Confirmed,
            s => return Err(DialogError::NoDialogStatus(s)),
        };
        if p.contact.trim().is_empty() {
            return Err(DialogError::MissingContact);
        }
        Ok(Self {
            id: DialogId {
                call_id: p.call_id.to_string(),
                local_tag: p.local_tag.to_string(),
                remote_tag: p.remote_tag.to_string(),
            },
            role: DialogRole::Uas,
            state,
            local_uri: p.local_uri.to_string(),
            remote_uri: p.remote_uri.to_string(),
            local_cseq: p.initial_local_cseq,
            last_invite_cseq: None,
            remote_cseq: Some(p.invite_cseq),
            remote_target: uri_of(p.contact).to_string(),
            route_set: p
                .record_route
                .iter()
                .map(|r| r.trim().to_string())
                .collect(),
        })
    }

    /// The dialog's identity.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// UAC or UAS.
    pub fn role(&self) -> DialogRole {
        self.role
    }

    /// Early, confirmed or terminated.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The remote target (Contact URI).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set, in Route order.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// The number of the last request we sent.
    pub fn local_cseq(&self) -> u32 {
        self.local_cseq
    }

    /// The peer's last CSeq, `None` while empty.
    pub fn remote_cseq(&self) -> Option<u32> {
        self.remote_cseq
    }

    /// A 2xx confirms an early dialog (§13.2.2.4 on the UAC side: the route
    /// set is recomputed from the 2xx's Record-Route, reversed, and the
    /// remote target from its Contact). On the UAS side call it with the
    /// INVITE's values (they do not change) when we send the 2xx.
    pub fn confirm(&mut self, contact: &str, record_route: &[&str]) -> Result<(), DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        if contact.trim().is_empty() {
            return Err(DialogError::MissingContact);
        }
        self.state = DialogState::Confirmed;
        self.remote_target = uri_of(contact).to_string();
        if self.role == DialogRole::Uac {
            self.route_set = record_route
                .iter()
                .rev()
                .map(|r| r.trim().to_string())
                .collect();
        }
        Ok(())
    }

    /// A target refresh (re-INVITE, UPDATE, or their 2xx, §12.2) carried a
    /// Contact: it replaces the remote target. The route set never changes
    /// after creation (§12.2).
    pub fn update_remote_target(&mut self, contact: &str) -> Result<(), DialogError> {
        if contact.trim().is_empty() {
            return Err(DialogError::MissingContact);
        }
        self.remote_target = uri_of(contact).to_string();
        Ok(())
    }

    /// The dialog ended (BYE sent or received, or the early dialog's INVITE
    /// failed).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// An in-dialog request from the peer with CSeq `cseq` (§12.2.2). A
    /// lower number than the remote sequence number is out of order
    /// ([`DialogError::CSeqOutOfOrder`]: answer 500); otherwise the number
    /// is remembered. ACK and CANCEL carry the CSeq of the request they
    /// refer to, so an equal number is accepted.
    pub fn handle_remote_request(&mut self, method: &str, cseq: u32) -> Result<(), DialogError> {
        if self.state == DialogState::Terminated && method != "ACK" {
            return Err(DialogError::Terminated);
        }
        match self.remote_cseq {
            Some(remote) if cseq < remote => Err(DialogError::CSeqOutOfOrder { got: cseq, remote }),
            _ => {
                self.remote_cseq = Some(cseq);
                Ok(())
            }
        }
    }

    /// The fields for a new in-dialog request (§12.2.1.1). The CSeq is one
    /// more than the last one we sent, except for ACK (the CSeq of the INVITE
    /// it acknowledges, §13.2.2.4) and CANCEL (callers cancel an INVITE with
    /// its CSeq; this returns the last INVITE's).
    ///
    /// Route handling: with an empty route set the Request-URI is the
    /// remote target and there is no Route. If the first route is a loose
    /// router (`;lr`) the Request-URI is the remote target and Route is the
    /// route set. Otherwise (a strict router, RFC 2543) the Request-URI is
    /// the first route's URI (minus parameters not allowed there) and Route
    /// is the rest of the route set followed by the remote target.
    pub fn next_request_fields(&mut self, method: &str) -> Result<RequestFields, DialogError> {
        let cseq = match method {
            "ACK" | "CANCEL" => self.last_invite_cseq.unwrap_or(self.local_cseq),
            _ => {
                if self.state == DialogState::Terminated {
                    return Err(DialogError::Terminated);
                }
                let next = self
                    .local_cseq
                    .checked_add(1)
                    .ok_or(DialogError::CSeqExhausted)?;
                self.local_cseq = next;
                if method == "INVITE" {
                    self.last_invite_cseq = Some(next);
                }
                next
            }
        };
        let (request_uri, route) = match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if is_loose_router(uri_of(first)) => {
                (self.remote_target.clone(), self.route_set.clone())
            }
            Some(first) => {
                let mut route: Vec<String> = self.route_set[1..].to_vec();
                route.push(format!("<{}>", self.remote_target));
                (request_uri_from(uri_of(first)), route)
            }
        };
        Ok(RequestFields {
            method: method.to_string(),
            request_uri,
            route,
            cseq,
            call_id: self.id.call_id.clone(),
            from: with_tag(&self.local_uri, &self.id.local_tag),
            to: with_tag(&self.remote_uri, &self.id.remote_tag),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn uac(status: u16, rr: &[&str]) -> Result<Dialog, DialogError> {
        Dialog::new_uac(&UacDialogParams {
            status,
            call_id: "a84b4c76e66710",
            local_tag: "1928301774",
            remote_tag: "a6c85cf",
            local_uri: "sip:alice@atlanta.com",
            remote_uri: "sip:bob@biloxi.com",
            invite_cseq: 314159,
            contact: "<sip:bob@192.0.2.4>",
            record_route: rr,
        })
    }

    fn uas(rr: &[&str]) -> Dialog {
        Dialog::new_uas(&UasDialogParams {
            status: 200,
            call_id: "a84b4c76e66710",
            local_tag: "a6c85cf",
            remote_tag: "1928301774",
            local_uri: "sip:bob@biloxi.com",
            remote_uri: "sip:alice@atlanta.com",
            invite_cseq: 314159,
            contact: "<sip:alice@pc33.atlanta.com>",
            record_route: rr,
            initial_local_cseq: 1000,
        })
        .unwrap()
    }

    const RR: [&str; 2] = ["<sip:p2.biloxi.com;lr>", "<sip:p1.atlanta.com;lr>"];

    #[test]
    fn uac_route_set_is_record_route_reversed() {
        let mut d = uac(200, &RR).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.role(), DialogRole::Uac);
        assert_eq!(
            d.route_set(),
            ["<sip:p1.atlanta.com;lr>", "<sip:p2.biloxi.com;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:bob@192.0.2.4");
        let f = d.next_request_fields("BYE").unwrap();
        // Loose routing: Request-URI is the remote target, Route the set.
        assert_eq!(f.request_uri, "sip:bob@192.0.2.4");
        assert_eq!(f.route, d.route_set());
        assert_eq!(f.cseq, 314160);
        assert_eq!(f.call_id, "a84b4c76e66710");
        assert_eq!(f.from, "<sip:alice@atlanta.com>;tag=1928301774");
        assert_eq!(f.to, "<sip:bob@biloxi.com>;tag=a6c85cf");
    }

    #[test]
    fn uas_route_set_is_record_route_in_order() {
        let mut d = uas(&RR);
        assert_eq!(d.role(), DialogRole::Uas);
        assert_eq!(d.route_set(), RR);
        assert_eq!(d.remote_cseq(), Some(314159));
        let f = d.next_request_fields("BYE").unwrap();
        assert_eq!(f.request_uri, "sip:alice@pc33.atlanta.com");
        assert_eq!(f.route, RR);
        assert_eq!(f.cseq, 1001);
        assert_eq!(f.from, "<sip:bob@biloxi.com>;tag=a6c85cf");
        assert_eq!(f.to, "<sip:alice@atlanta.com>;tag=1928301774");
    }

    #[test]
    fn no_route_set() {
        let mut d = uac(200, &[]).unwrap();
        let f = d.next_request_fields("INFO").unwrap();
        assert_eq!(f.request_uri, "sip:bob@192.0.2.4");
        assert!(f.route.is_empty());
    }

    #[test]
    fn strict_router_first() {
        // §12.2.1.1: with a strict first hop (no `lr`) the Request-URI is the
        // first route, stripped of `method` and headers, and the remote
        // target goes last in Route. The response lists proxy1 last.
        let rr = [
            "<sip:proxy3;lr>",
            "<sip:proxy2;lr>",
            "<sip:proxy1;method=INVITE?Subject=x>",
        ];
        let mut d = uac(200, &rr).unwrap();
        let f = d.next_request_fields("BYE").unwrap();
        assert_eq!(f.request_uri, "sip:proxy1");
        assert_eq!(
            f.route,
            ["<sip:proxy2;lr>", "<sip:proxy3;lr>", "<sip:bob@192.0.2.4>"]
        );
    }

    #[test]
    fn loose_router_detection() {
        assert!(is_loose_router("sip:p.example.com;lr"));
        assert!(is_loose_router("sip:p.example.com;transport=tcp;LR=on"));
        assert!(!is_loose_router("sip:p.example.com"));
        assert!(!is_loose_router("sip:p.example.com;transport=tcp?x=lr"));
        assert!(!is_loose_router("sip:lr@p.example.com"));
        assert_eq!(uri_of("\"P\" <sip:p;lr>"), "sip:p;lr");
        assert_eq!(uri_of("sip:p;lr"), "sip:p;lr");
        assert_eq!(
            request_uri_from("sip:p;maddr=1.2.3.4;method=BYE?h=v"),
            "sip:p;maddr=1.2.3.4"
        );
    }

    #[test]
    fn remote_cseq_rules() {
        let mut d = uac(200, &[]).unwrap();
        // UAC: remote sequence number empty until the peer sends a request.
        assert_eq!(d.remote_cseq(), None);
        d.handle_remote_request("INFO", 10).unwrap();
        assert_eq!(d.remote_cseq(), Some(10));
        assert_eq!(
            d.handle_remote_request("INFO", 9),
            Err(DialogError::CSeqOutOfOrder { got: 9, remote: 10 })
        );
        // Not remembered on failure.
        assert_eq!(d.remote_cseq(), Some(10));
        d.handle_remote_request("ACK", 10).unwrap();
        d.handle_remote_request("BYE", 20).unwrap();
        assert_eq!(d.remote_cseq(), Some(20));

        let mut s = uas(&[]);
        assert!(matches!(
            s.handle_remote_request("BYE", 314158),
            Err(DialogError::CSeqOutOfOrder { .. })
        ));
        s.handle_remote_request("BYE", 314160).unwrap();
    }

    #[test]
    fn local_cseq_ack_and_cancel() {
        let mut d = uac(200, &[]).unwrap();
        // ACK for the 2xx reuses the INVITE's CSeq.
        assert_eq!(d.next_request_fields("ACK").unwrap().cseq, 314159);
        assert_eq!(d.next_request_fields("INVITE").unwrap().cseq, 314160);
        assert_eq!(d.next_request_fields("ACK").unwrap().cseq, 314160);
        assert_eq!(d.next_request_fields("UPDATE").unwrap().cseq, 314161);
        assert_eq!(d.next_request_fields("CANCEL").unwrap().cseq, 314160);
        assert_eq!(d.local_cseq(), 314161);
        d.terminate();
        assert_eq!(d.next_request_fields("BYE"), Err(DialogError::Terminated));
    }

    #[test]
    fn early_dialog_rules() {
        assert_eq!(uac(100, &RR).unwrap_err(), DialogError::NoDialogStatus(100));
        assert_eq!(uac(486, &RR).unwrap_err(), DialogError::NoDialogStatus(486));
        let mut no_tag = UacDialogParams {
            status: 180,
            call_id: "c",
            local_tag: "l",
            remote_tag: "",
            local_uri: "sip:a@h",
            remote_uri: "sip:b@h",
            invite_cseq: 1,
            contact: "<sip:b@h>",
            record_route: &[],
        };
        assert_eq!(
            Dialog::new_uac(&no_tag).unwrap_err(),
            DialogError::MissingRemoteTag
        );
        // A 2xx without a To tag (RFC 2543 peer) still makes a dialog.
        no_tag.status = 200;
        let d = Dialog::new_uac(&no_tag).unwrap();
        assert_eq!(d.id().remote_tag, "");
        no_tag.contact = " ";
        assert_eq!(
            Dialog::new_uac(&no_tag).unwrap_err(),
            DialogError::MissingContact
        );

        // 180 with a tag: early; the 2xx confirms and recomputes the route set.
        let mut d = uac(180, &["<sip:old;lr>"]).unwrap();
        assert_eq!(d.state(), DialogState::Early);
        assert_eq!(d.route_set(), ["<sip:old;lr>"]);
        d.confirm("<sip:bob@198.51.100.7>", &RR).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(
            d.route_set(),
            ["<sip:p1.atlanta.com;lr>", "<sip:p2.biloxi.com;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:bob@198.51.100.7");
        // A target refresh changes the remote target, not the route set.
        d.update_remote_target("<sip:bob@203.0.113.9>").unwrap();
        assert_eq!(d.remote_target(), "sip:bob@203.0.113.9");
        assert_eq!(d.route_set().len(), 2);
    }

    #[test]
    fn b2bua_two_independent_legs() {
        // The caller-facing UAS dialog and the trunk-facing UAC dialog share
        // nothing: separate Call-IDs, tags, CSeq spaces and route sets.
        let mut a = uas(&RR);
        let mut b = Dialog::new_uac(&UacDialogParams {
            status: 200,
            call_id: "kolokol-1",
            local_tag: "k1",
            remote_tag: "t1",
            local_uri: "sip:gw@kolokol.example",
            remote_uri: "sip:+15551234@trunk.example",
            invite_cseq: 1,
            contact: "<sip:trunk@198.51.100.1:5060>",
            record_route: &[],
        })
        .unwrap();
        let fa = a.next_request_fields("BYE").unwrap();
        let fb = b.next_request_fields("BYE").unwrap();
        assert_ne!(fa.call_id, fb.call_id);
        assert_eq!(fa.cseq, 1001);
        assert_eq!(fb.cseq, 2);
        assert_eq!(fb.request_uri, "sip:trunk@198.51.100.1:5060");
        assert!(fb.route.is_empty());
    }

    #[test]
    fn tags_are_fresh() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (a, b) = (new_tag(&mut rng), new_tag(&mut rng));
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn tag_brackets_bare_uri() {
        assert_eq!(
            with_tag("sip:a@h;user=phone", "x"),
            "<sip:a@h;user=phone>;tag=x"
        );
        assert_eq!(with_tag("\"A\" <sip:a@h>", "x"), "\"A\" <sip:a@h>;tag=x");
        assert_eq!(with_tag("sip:a@h", ""), "sip:a@h");
    }
}

//! E-mail over SMTP with lettre: STARTTLS (required, never opportunistic), implicit TLS or plain, an optional
//! extra CA, login. A failed login keeps the message in the outbox (the operator fixes the password, the message
//! goes out); other `5xx` answers are permanent.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::channel::{error_chain, DeliveryError, Message};
use super::config::{EmailConfig, TlsMode};

/// SMTP reply codes that mean "your login is wrong or needed": kept and retried, not dropped.
const AUTH_CODES: &[&str] = &["530", "534", "535", "538"];

/// A ready SMTP transport and the parsed addresses.
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    host: String,
    port: u16,
}

fn parse(a: &str) -> Result<Mailbox, String> {
    a.parse().map_err(|e| format!("invalid address `{a}`: {e}"))
}

impl EmailSender {
    /// Builds the transport (reads the CA file).
    pub fn new(c: &EmailConfig) -> Result<EmailSender, String> {
        let port = c.port();
        let tls = match c.tls {
            TlsMode::None => Tls::None,
            mode => {
                let mut b = TlsParameters::builder(c.host.clone());
                if let Some(ca) = &c.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| format!("cannot read CA file `{}`: {e}", ca.display()))?;
                    if !super::config::pem_has_certificate(&pem) {
                        return Err(format!("CA file `{}` holds no PEM certificate", ca.display()));
                    }
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| format!("CA file `{}`: {}", ca.display(), error_chain(&e)))?;
                    b = b.add_root_certificate(cert);
                }
                let params = b.build_rustls().map_err(|e| format!("TLS settings: {}", error_chain(&e)))?;
                if mode == TlsMode::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(c.timeout));
        if let Some(a) = &c.auth {
            b = b.credentials(Credentials::new(a.username.expose().to_string(), a.password.expose().to_string()));
        }
        Ok(EmailSender {
            transport: b.build(),
            from: parse(&c.from)?,
            to: c.to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            cc: c.cc.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            bcc: c.bcc.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            host: c.host.clone(),
            port,
        })
    }

    /// Sends one message. Its `Message-ID` is derived from the message id, so a retry is recognisably the same
    /// message; its `Date` is when it was queued.
    pub async fn send(&self, m: &Message, subject: &str, body: &str) -> Result<(), DeliveryError> {
        let domain = self.from.email.domain().to_string();
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .date(m.created.into())
            .message_id(Some(format!("<{}@{domain}>", m.id)))
            .header(ContentType::TEXT_PLAIN);
        for a in &self.to {
            b = b.to(a.clone());
        }
        for a in &self.cc {
            b = b.cc(a.clone());
        }
        for a in &self.bcc {
            b = b.bcc(a.clone());
        }
        let email =
            b.body(body.to_string()).map_err(|e| DeliveryError::permanent(format!("cannot build the e-mail: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> DeliveryError {
        let at = format!("{}:{}", self.host, self.port);
        let text = error_chain(e);
        match e.status().map(|c| c.to_string()) {
            Some(code) if AUTH_CODES.contains(&code.as_str()) => DeliveryError::retry(format!(
                "SMTP login to {at} failed ({text}); check the channel's `auth` (the message stays in the outbox)"
            )),
            Some(_) if e.is_permanent() => {
                DeliveryError::permanent(format!("SMTP server {at} refused the message: {text}"))
            }
            Some(_) => DeliveryError::retry(format!("SMTP server {at} answered a temporary error: {text}")),
            None if e.is_timeout() => DeliveryError::retry(format!("SMTP server {at} timed out: {text}")),
            None if e.is_tls() || text.contains("certificate") || text.contains("tls") => {
                DeliveryError::retry(format!("TLS with SMTP server {at} failed: {text}"))
            }
            None => DeliveryError::retry(format!("cannot talk to SMTP server {at}: {text}")),
        }
    }
}

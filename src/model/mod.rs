//! The values that travel along the pipe: observations (probe → rules), requests (rule → dispatcher), alert
//! records and planned actions (dispatcher → actions → notifier), and the domain enums the store keeps as text.
//! Every stage imports its inputs from here instead of from the stage before it.

mod alert;
mod decision;
pub mod doc;
mod kinds;
mod observation;
mod overrides;
mod request;

pub use alert::*;
pub use decision::*;
pub use doc::{Doc, DocError, DocValue};
pub use kinds::*;
pub use observation::*;
pub use overrides::*;
pub use request::*;

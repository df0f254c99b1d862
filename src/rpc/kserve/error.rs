// Copyright 2026 The gpu-sidecar Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Why the codec refuses a message: [`DecodeError`], INVALID_ARGUMENT (never
//! RESOURCE_EXHAUSTED: a client must not retry a message that breaks the protocol).

/// Why a message is refused before it reaches a model: INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The request, or the answer it asks for, is larger than the configured limit (never
    /// RESOURCE_EXHAUSTED, which tells a client to back off and retry).
    #[error("the {what} is {size} bytes, over sidecar.rpc.max-message-size ({limit} bytes): send fewer rows per request, or raise the limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The message breaks the protocol.
    #[error("{0}")]
    Invalid(String),
}

/// A message that breaks the protocol, saying how.
pub fn invalid(message: String) -> DecodeError {
    DecodeError::Invalid(message)
}

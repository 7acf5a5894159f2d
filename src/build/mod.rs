//! Building images: the backends that turn a plan into an image.
//!
//! For now the buildah backend, which builds generated or user-written recipes with
//! `buildah bud --isolation chroot`. Depends on `spec` and `config`.

pub mod buildah;

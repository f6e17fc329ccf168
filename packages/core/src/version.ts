/** The ckpt version (images record the version that made them). Its own module: `ckpt --version` loads only this. */
export const VERSION = '0.2.0';

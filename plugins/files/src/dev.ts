/** dev_t decoding: core's (one place for the key of saved-once objects); unit-tested here. */
export { devName } from '@ckpt/core';

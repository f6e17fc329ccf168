import { definePlugin } from '@ckpt/core';
export const NAME = '@ckpt/plugin-unix-socket';
export const unixSocketPlugin = definePlugin<void>(() => ({ name: NAME, version: '0.1.0', apply() {} }));
export default unixSocketPlugin;

import { definePlugin } from '@ckpt/core';
export const NAME = '@ckpt/plugin-tcp';
export const tcpPlugin = definePlugin<void>(() => ({ name: NAME, version: '0.1.0', apply() {} }));
export default tcpPlugin;

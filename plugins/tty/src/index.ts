import { definePlugin } from '@ckpt/core';
export const NAME = '@ckpt/plugin-tty';
export const ttyPlugin = definePlugin<void>(() => ({ name: NAME, version: '0.1.0', apply() {} }));
export default ttyPlugin;

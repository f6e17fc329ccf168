import { definePlugin } from '@ckpt/core';
export const NAME = '@ckpt/plugin-file-locks';
export const fileLocksPlugin = definePlugin<void>(() => ({ name: NAME, version: '0.1.0', apply() {} }));
export default fileLocksPlugin;

/** embedding ops (to be implemented). */
export {};

/** attention ops (to be implemented). */
export {};

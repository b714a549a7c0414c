/** gather_scatter ops (to be implemented). */
export {};

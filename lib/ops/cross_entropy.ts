/** cross_entropy ops (to be implemented). */
export {};
